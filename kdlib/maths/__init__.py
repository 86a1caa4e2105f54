"""Floor 1: pure tensor and array functions; nothing else of the kit is imported (only other ``kdlib.maths`` modules).

- ``returns``: teacher-induced rewards, the K-step return (KETCHUP Algorithm 1), baselines, variance and bias.
- ``advantages``: GAE, whitening, group-relative (GRPO) and MiniLLM advantages for clipped policy optimisation.
- ``losses``: REINFORCE and divergence losses (KL, JS, TVD and Wen et al.'s step-wise forms), sequence NLL.
- ``ppo_losses``: clipped policy loss, value loss, k3 KL.  ``full_vocab``: chunked entropy and KL over the vocabulary.
- ``stats``: mean with CI, paired tests, bootstrap, gradient-projection statistics.  ``metrics``: ROUGE, BLEU,
  accuracy, answer parsing.  ``calculator``: GSM8K's ``<<a*b=c>>`` annotations.
- The rival systems' maths: ``pseudolabel`` and ``reward_model`` (seed 003), ``constrained`` and
  ``constrained_metrics`` (seed 004).
"""
