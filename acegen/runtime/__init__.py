"""Runtime: neighbour lists, kernel calls and the ASE calculator."""
