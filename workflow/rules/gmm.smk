# Placeholder until this stage lands.
GMM_TARGETS = []
