"""Floor 3: one training loop per family on the shared harness (``base``): supervised, divergence, REINFORCE (``rl``),
clipped policy optimisation (``ppo``), the reward model, and seed 004's scorers on the GRPO loop (``cmdp``). ``tasks``
loads a run's task bundle and models; ``runs`` owns run folders (atomic summaries, locks, metrics)."""
