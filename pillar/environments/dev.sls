# The dev environment: a developer's farm, the lab.
