"""The shipped toy: a 0.71 M-parameter class-conditional flow DiT for 16×16 digits (model), its data, prompts,
evaluation, GRPO policy, digit classifier and rewards, and their weights (weights/).

Nothing here is imported by the GRPO core: ``import training.trainer`` or ``training.rewards`` loads none of it until
a toy name is used.
"""
