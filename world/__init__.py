"""The ground-truth world: procedural objects, cameras, exact renderer, analytic prior."""
