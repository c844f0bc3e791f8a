"""What the notebooks draw and explain: figures, explorers, the notebook runner."""
