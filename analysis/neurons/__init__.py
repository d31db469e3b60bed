"""Neuron exemplar indexes: what each MLP neuron responds to over a text corpus."""
