"""One training loop for every task (`loop.py`) and its optimiser and schedule (`optim.py`)."""
