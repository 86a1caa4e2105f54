"""Floor 2: models (T5 and decoder-only, tiny and hub), static-KV decoding engines, generation, and evaluation of a
model's outputs against a task's references. Imports ``kdlib.maths`` only."""
