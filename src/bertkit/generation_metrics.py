"""The numbers generated text is scored by: corpus BLEU-4 from sacrebleu (its 13a tokenisation, or
its `zh` one for Chinese) and ROUGE-L F1 from rouge-score (words, and each CJK character as a word),
both on 0-100. The two libraries come with the `generate` extra; without them the report is empty
and the log says how to install them.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # the ideographs BERT's tokenizer splits one a token
CJK_OR_WORD = re.compile(f"[{CJK}]|[^\\W_{CJK}]+")


class _Words:
    """rouge-score's tokenizer interface: lower-cased words, and each CJK character as a word (its
    default keeps ASCII letters and digits only, which leaves Chinese text empty)."""

    def tokenize(self, text: str) -> list[str]:
        return CJK_OR_WORD.findall(text.lower())


def generation_report(generated: list[str], references: list[str]) -> dict:
    """{"bleu": corpus BLEU-4, "rouge_l": mean ROUGE-L F1}, both 0-100; {} (with a note in the log)
    without the `generate` extra."""
    try:
        import sacrebleu  # optional, the `generate` extra: pip install 'bertkit[generate]'
        from rouge_score import rouge_scorer  # the same extra
    except ImportError:
        log.info("BLEU and ROUGE-L need sacrebleu and rouge-score: pip install 'bertkit[generate]'")
        return {}
    if len(generated) != len(references) or not references:
        raise BertkitError(f"{len(generated)} generated texts for {len(references)} references: give one each")
    chinese = any(re.search(f"[{CJK}]", r) for r in references)
    bleu = sacrebleu.corpus_bleu(generated, [references], tokenize="zh" if chinese else "13a").score
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())
    rouge = [scorer.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, references)]
    return {"bleu": float(bleu), "rouge_l": 100.0 * float(np.mean(rouge))}
