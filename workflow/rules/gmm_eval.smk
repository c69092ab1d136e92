# Placeholder until this stage lands.
GMM_EVAL_TARGETS = []
