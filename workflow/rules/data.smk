# Placeholder until this stage lands.
DATA_TARGETS = []
