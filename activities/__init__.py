"""Activities: the only place workflows touch the world; classes built with their dependencies."""
