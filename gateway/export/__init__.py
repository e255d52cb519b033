"""Export and import of a project's or a subject's data as JSONL.

* ``kinds``: what an export holds, collection by collection, and each document's id;
* ``dump``: writing the lines (``GET /subjects/{id}/export``, ``mnx-gateway export``);
* ``load``: checking a whole file, then writing it and re-indexing (``mnx-gateway import``);
* ``commands``: the two CLI commands.
"""
