"""The graph's nodes, one module per role of the method.

- ``prepare``: validates the input, builds every model (no call), settles the roles;
- ``roles``: role generation r_1..r_n = LLM(D, T), cached;
- ``proposer``: one agent answers in its role (n of them in parallel per layer);
- ``judge``: keeps k of the layer's n responses;
- ``moderator``: decides stop or continue after a layer, and the route that follows;
- ``aggregator``: synthesises the final answer.

Each node is a coroutine taking the shared ``NodeKit`` (``kit``) first; ``graph.py`` binds it.
"""
