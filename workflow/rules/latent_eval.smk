# Placeholder until this stage lands.
LATENT_EVAL_TARGETS = []
