"""Disk and versions: what each definition costs on disk, removing, pruning, verifying, reusing, updating.

Modules (import the one you need; this package imports nothing heavy):

- :mod:`tunehub.disk.hashcache`: the sha256 cache keyed by (device, inode, size, mtime) and
  the record of what each file was downloaded as (SQLite, ``<home>/.tunehub/hashes.db``);
- :mod:`tunehub.disk.files`: which files a definition names and where they are on disk, and
  the safety rules for deleting inside the weights folders;
- :mod:`tunehub.disk.usage`: ``tunehub du``;
- :mod:`tunehub.disk.remove`: ``tunehub rm`` (and the TUI's delete) and the "removed by you" mark;
- :mod:`tunehub.disk.prune`: ``tunehub prune``;
- :mod:`tunehub.disk.verify`: ``tunehub verify [--repair]`` and ``tunehub adopt``;
- :mod:`tunehub.disk.reuse`: files with the Hub's bytes already on disk (read-only folders);
- :mod:`tunehub.disk.update`: ``tunehub outdated`` and ``tunehub pull --update``.
"""
