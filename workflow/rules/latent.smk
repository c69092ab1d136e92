# Placeholder until this stage lands.
LATENT_TARGETS = []
