"""Crystal graphs, GNN ensembles, BoTorch acquisition over candidate pools, candidate generation."""
