"""`tempo embed`: what a backbone's features learned, as files (.npz, CSV, a TensorBoard
projector run), a 2-D map, nearest-neighbour grids and the numbers beside them."""
