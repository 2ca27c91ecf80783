"""alignd's training job: one round of TRL DPO/KTO with PEFT, with alignd's KL guard (see README.md)."""
