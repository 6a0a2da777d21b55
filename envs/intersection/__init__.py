"""The intersection driving world (see ``docs/DESIGN.md``, "The two domains").

Modules, bottom up:

- :mod:`~bystander.envs.intersection.config`: :class:`IntersectionConfig`, the validated
  configuration (units: metres, seconds, radians).
- :mod:`~bystander.envs.intersection.road`: :class:`RoadNetwork`, a grid of 4-way
  intersections as segment polylines, successor / conflict tables, buildings, routes.
- :mod:`~bystander.envs.intersection.kernels`: compiled inner loops (numba).
- :mod:`~bystander.envs.intersection.sim`: :class:`IntersectionSim`, N worlds stepped
  together; observations, rewards, costs, observers' visibility of the ego.
- :mod:`~bystander.envs.intersection.views`: spaces, action checks, ``info`` building.
- :mod:`~bystander.envs.intersection.gym_env`: :class:`IntersectionEnv`, the
  single-agent Gymnasium view registered as ``bystander/Intersection-v0``.
- :mod:`~bystander.envs.intersection.render`: pygame rendering, GIF / MP4 export.

The PettingZoo env is :mod:`bystander.envs.intersection_v0`. Nothing is imported here,
so ``import bystander.envs`` stays light.
"""
