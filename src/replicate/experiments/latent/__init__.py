"""E3: the paper's flow in an auto-encoder's latent space (paper 5.2, Figures 5.3, 5.4, Table 1),
and beyond the paper the cINN on the same latents and independent judges of the samples.

- :mod:`~.autoencoder`: the auto-encoder whose latents the flows model;
- :mod:`~.models`: the latent flow and the latent cINN, saved and loaded as safetensors;
- :mod:`~.training`: training both (resumable);
- :mod:`~.joint`: the auto-encoder and the flow trained together (issue 29);
- :mod:`~.evaluation`: Table 1, generated images, the metrics and ablation tables;
- :mod:`~.judges`: the judging CNN, the Frechet distance and the label probes;
- :mod:`~.figures`: Figures 5.3 and 5.4, reconstructions, training curves;
- :mod:`~.stages`: the functions the rules call, one per rule.
"""
