"""Sharded mode: the native API over several PostgreSQL databases.

Layout
- Physical databases: FASTPOST_DB__SHARDS, a JSON list of PostgreSQL URLs. Empty (the
  default): one database, FASTPOST_DB__URL, and nothing here runs. The first database is
  also the directory: it holds the shard map and the user directory.
- Logical shards: 32, one per shard number an id carries (fastpost.ids), mapped to the
  physical databases by the shard map (`shard_map` on the directory, round-robin
  `logical % n` from `fastpost shards init`: shard_map.py; every instance follows it while
  serving: map_watch.py). Moving a logical shard (move.py) ends with one map entry changed
  and its version bumped; its writes pass one gate, router.Shards.writing.
- Ids: a row is numbered by its logical shard's sequence (`fastpost_shard_ids_LL`, from
  first_id(LL); migration 0008 makes all 32 on every database), on whichever database hosts
  that shard, so the database holding a row is read off its id (`id >> 48`).
- Users: a new user's logical shard is a hash of their lower-cased name (uniform over the
  32). Usernames and emails are unique across databases through `user_directory` on the
  directory, claimed before the user row is written (users.py says how a failure between
  the two is repaired). Login reads the directory, then the user's database.
- Posts live with their author (the author's logical shard); likes, tags and comments with
  the post. Follows are stored on both users' databases (social.py says why and in which
  order).
- Cross-shard references carry no foreign key: `shards init` drops those of likes,
  comments and follows on every database (router.CROSS_SHARD_FOREIGN_KEYS).

Routing (router.Shards): `for_id(id)` is the database of a user or a post; `each()` every
database. A request about one user or one post touches one database (tests/shards count
them). Lists spanning databases (the newest posts, by tag, the feed) run one statement per
database concerned, concurrently, with the same keyset bound and limit, and merge the
sorted pages (merge.py): one statement per database whatever the page number. Offset
paging of the native API is refused (422) in sharded mode: cursors only.

The routes of sharded mode are their own (api.py), mounted by create_app instead of the
unsharded ones; an unsharded operation without a counterpart here answers 501. The
RealWorld API has its own sharded routes (realworld.py): a slug's suffix names its logical
shard (posts.slugs), and its offset lists are cut from each database's first offset + limit.
Cache keys are those of unsharded mode (ids are global), dropped by the same writes.
"""

# Nothing imported here: `fastpost shards` is imported with the CLI, before `fastpost serve`
# sets up the metrics folder that importing fastpost.db (and with it the metrics) needs set
# first. Import from the modules: fastpost.shards.router.Shards.
