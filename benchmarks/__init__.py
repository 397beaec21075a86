"""Scripts that measure fastpost's speed and print ratios against baselines from the same run."""
