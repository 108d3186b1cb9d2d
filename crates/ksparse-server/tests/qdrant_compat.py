#!/usr/bin/env python3
"""Drive the official `qdrant-client` (PyPI) against a running ksparse server.

Checks, using only qdrant-client's public API over REST (prefer_grpc=False):
  * collection_exists / delete_collection / create_collection of a sparse-only
    collection "qc_test" (vectors_config={}, sparse_vectors_config={"text": ...});
  * upsert (wait=True) of 20 points with int ids and 2 UUID-string ids, sparse
    vectors with positive values and indices < 65536, payloads with a keyword
    field "city" and an integer field "year"; re-upsert overwrites a point;
  * retrieve by ids: ids come back with their type (int stays int, UUID stays
    the same string), payloads are exact;
  * query_points with a SparseVector (sent as {"nearest": ...}) and using="text":
    results are a correct top-k of the brute-force dot product computed here
    (scores within 1e-3 relative, ties allowed, order non-increasing);
  * the same with MatchValue, MatchAny, Range and combined filters: results are
    the brute-force top-k over the passing points, and never fewer than the
    passing points when limit exceeds their number;
  * delete by PointIdsList and by FilterSelector: the points are gone from
    retrieve and from query results;
  * count (plain and filtered), get_collection().points_count,
    get_collections lists the collection, collection_exists, delete_collection,
    get_collection of a deleted collection fails with 404;
  * when an API key is given: a wrong key and a missing key fail with 401/403.

Every document shares dimension SHARED and every strict query contains it, so
every point has a positive score and the expected result count is exact.

Run (server already running; needs `pip install qdrant-client`):
    python3 qdrant_compat.py http://127.0.0.1:PORT [API_KEY]
Exits 0 when everything passed, 1 on the first failed check.
"""

import math
import random
import sys
import traceback
import uuid
import warnings

try:
    from qdrant_client import QdrantClient, models
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
except ImportError:
    sys.exit("qdrant-client is not installed: pip install qdrant-client")

COLLECTION = "qc_test"
VECTOR = "text"
SHARED = 7  # dimension present in every document and every strict query
REL_TOL = 1e-3

warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")


def step(msg):
    print(f"ok   {msg}", flush=True)


# ---------------------------------------------------------------- test data

def make_points():
    """20 int-id points + 2 UUID points, deterministic."""
    rng = random.Random(1234)
    vocab = sorted(rng.sample(range(8, 65536), 40)) + [65535]
    cities = ["Paris", "Rome", "Berlin", "Oslo"]
    ids = list(range(1, 21)) + [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2)]
    points = {}
    for n, pid in enumerate(ids):
        dims = sorted(rng.sample(vocab, rng.randint(3, 8)))
        vec = {SHARED: round(rng.uniform(0.05, 1.0), 4)}
        for d in dims:
            vec[d] = round(rng.uniform(0.05, 2.0), 4)
        payload = {"city": cities[n % len(cities)], "year": 1990 + (n * 7) % 35}
        points[pid] = (vec, payload)
    return points


def sparse(vec, shuffle=False):
    idx = sorted(vec)
    if shuffle:
        random.Random(len(idx)).shuffle(idx)
    return models.SparseVector(indices=idx, values=[vec[i] for i in idx])


def dot(q, d):
    return sum(v * d[i] for i, v in q.items() if i in d)


def passes(payload, flt):
    """Brute-force evaluation of the few filter shapes used below."""
    def cond(c):
        value = payload.get(c.key)
        if c.match is not None:
            if isinstance(c.match, models.MatchValue):
                return value == c.match.value
            if isinstance(c.match, models.MatchAny):
                return value in c.match.any
            raise ValueError(c.match)
        r = c.range
        if not isinstance(value, (int, float)):
            return False
        return ((r.gt is None or value > r.gt) and (r.gte is None or value >= r.gte)
                and (r.lt is None or value < r.lt) and (r.lte is None or value <= r.lte))
    if flt is None:
        return True
    return (all(cond(c) for c in flt.must or [])
            and not any(cond(c) for c in flt.must_not or [])
            and (not flt.should or any(cond(c) for c in flt.should)))


def close(a, b):
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-6)


# ---------------------------------------------------------------- checks

def check_query(client, points, qvec, limit, flt=None, strict=True, label=""):
    """Run query_points and compare with brute force over the passing points."""
    res = client.query_points(COLLECTION, query=sparse(qvec), using=VECTOR, limit=limit,
                              query_filter=flt, with_payload=True).points
    expected = {pid: dot(qvec, vec) for pid, (vec, payload) in points.items() if passes(payload, flt)}
    positive = [pid for pid, s in expected.items() if s > 0]
    got_ids = [p.id for p in res]
    assert len(set(got_ids)) == len(got_ids), f"{label}: duplicate ids {got_ids}"
    want_n = min(limit, len(positive))
    if strict:
        assert len(res) == want_n, f"{label}: got {len(res)} results, expected {want_n}"
    else:
        assert want_n <= len(res) <= min(limit, len(expected)), f"{label}: got {len(res)} results"
    for p in res:
        assert p.id in expected, f"{label}: id {p.id!r} does not pass the filter or does not exist"
        assert close(p.score, expected[p.id]), f"{label}: id {p.id!r} score {p.score} != {expected[p.id]}"
        assert p.payload == points[p.id][1], f"{label}: id {p.id!r} payload {p.payload} != {points[p.id][1]}"
    for a, b in zip(res, res[1:]):
        assert a.score >= b.score or close(a.score, b.score), f"{label}: scores not sorted {a.score} < {b.score}"
    if res:
        floor = res[-1].score
        for pid, s in expected.items():
            if pid not in got_ids:
                assert s <= floor or close(s, floor), f"{label}: missed id {pid!r} with score {s} > {floor}"
    step(f"{label}: {len(res)} results match brute force")
    return res


def expect_status(fn, statuses, label):
    try:
        fn()
    except UnexpectedResponse as e:
        assert e.status_code in statuses, f"{label}: status {e.status_code}, expected {statuses}"
        step(f"{label}: HTTP {e.status_code}")
        return
    raise AssertionError(f"{label}: no error raised, expected HTTP {statuses}")


def run(url, api_key):
    client = QdrantClient(url=url, api_key=api_key, prefer_grpc=False,
                          check_compatibility=False, timeout=60)
    points = make_points()
    uuids = [pid for pid in points if isinstance(pid, str)]

    # --- collection lifecycle
    if client.collection_exists(COLLECTION):
        assert client.delete_collection(COLLECTION) is True
        step("deleted leftover collection")
    assert client.collection_exists(COLLECTION) is False, "collection_exists still True after delete"
    step("collection_exists is False before create")
    assert client.create_collection(COLLECTION, vectors_config={},
                                    sparse_vectors_config={VECTOR: models.SparseVectorParams()}) is True
    assert client.collection_exists(COLLECTION) is True
    step("create_collection (sparse only)")

    # --- upsert
    batch = [models.PointStruct(id=pid, vector={VECTOR: sparse(vec)}, payload=payload)
             for pid, (vec, payload) in points.items()]
    r = client.upsert(COLLECTION, points=batch[:12], wait=True)
    assert r.status == models.UpdateStatus.COMPLETED, r
    r = client.upsert(COLLECTION, points=batch[12:], wait=True)
    assert r.status == models.UpdateStatus.COMPLETED, r
    step(f"upsert {len(batch)} points in 2 batches ({len(uuids)} UUID ids)")

    # overwrite point 5 with new vector and payload, indices sent unsorted
    new_vec = {SHARED: 0.5, 3: 1.5, 40000: 0.75, 65535: 0.25}
    points[5] = (new_vec, {"city": "Rome", "year": 2011})
    client.upsert(COLLECTION, points=[models.PointStruct(
        id=5, vector={VECTOR: sparse(new_vec, shuffle=True)}, payload=points[5][1])], wait=True)
    step("upsert overwrites an existing id (unsorted indices)")

    # --- retrieve
    want = [1, 2, 5, 20] + uuids
    recs = client.retrieve(COLLECTION, ids=want, with_payload=True)
    by_id = {rec.id: rec for rec in recs}
    assert sorted(map(str, by_id)) == sorted(map(str, want)), f"retrieve ids {list(by_id)}"
    for pid in want:
        rec = by_id[pid]  # int ids must come back as JSON numbers, UUIDs as the same string
        assert type(rec.id) is type(pid), f"id {pid!r} came back as {rec.id!r}"
        assert rec.payload == points[pid][1], f"retrieve {pid!r}: {rec.payload} != {points[pid][1]}"
    assert client.retrieve(COLLECTION, ids=[999999], with_payload=True) == []
    step("retrieve by ids (int and UUID), payloads exact; missing id -> []")

    # --- unfiltered queries
    rng = random.Random(99)
    all_dims = sorted({d for vec, _ in points.values() for d in vec if d != SHARED})
    queries = []
    for _ in range(5):
        q = {SHARED: round(rng.uniform(0.1, 1.0), 3)}
        for d in rng.sample(all_dims, 6):
            q[d] = round(rng.uniform(0.1, 2.0), 3)
        queries.append(q)
    for n, q in enumerate(queries):
        check_query(client, points, q, limit=5, label=f"query #{n} limit=5")
    check_query(client, points, queries[0], limit=100, label="query limit=100 returns every point")
    sparse_only = {d: 1.0 for d in all_dims[:4]}  # no SHARED: some points score 0
    check_query(client, points, sparse_only, limit=100, strict=False,
                label="query without shared dimension")

    # --- filtered queries
    FC = models.FieldCondition
    filters = {
        "MatchValue city=Paris": models.Filter(must=[FC(key="city", match=models.MatchValue(value="Paris"))]),
        "MatchAny city in [Rome, Oslo]": models.Filter(
            must=[FC(key="city", match=models.MatchAny(any=["Rome", "Oslo"]))]),
        "Range 2000 <= year < 2015": models.Filter(must=[FC(key="year", range=models.Range(gte=2000, lt=2015))]),
        "MatchValue year=2011 (int)": models.Filter(must=[FC(key="year", match=models.MatchValue(value=2011))]),
        "must Range + must_not Berlin": models.Filter(
            must=[FC(key="year", range=models.Range(gt=1995))],
            must_not=[FC(key="city", match=models.MatchValue(value="Berlin"))]),
        "should Paris or Oslo": models.Filter(
            should=[FC(key="city", match=models.MatchValue(value="Paris")),
                    FC(key="city", match=models.MatchValue(value="Oslo"))]),
        "no point passes": models.Filter(must=[FC(key="city", match=models.MatchValue(value="Atlantis"))]),
    }
    for name, flt in filters.items():
        n_pass = sum(passes(p, flt) for _, p in points.values())
        check_query(client, points, queries[1], limit=3, flt=flt, label=f"{name} limit=3")
        check_query(client, points, queries[2], limit=n_pass + 5, flt=flt,
                    label=f"{name} limit={n_pass + 5} (passing={n_pass})")

    # --- count
    c = client.count(COLLECTION, exact=True).count
    assert c == len(points), f"count {c} != {len(points)}"
    flt = filters["MatchValue city=Paris"]
    c = client.count(COLLECTION, count_filter=flt, exact=True).count
    assert c == sum(passes(p, flt) for _, p in points.values()), f"filtered count {c}"
    step("count (plain and filtered)")

    # --- delete by ids
    gone = [3, 4, uuids[0]]
    r = client.delete(COLLECTION, points_selector=models.PointIdsList(points=gone), wait=True)
    assert r.status == models.UpdateStatus.COMPLETED, r
    for pid in gone:
        del points[pid]
    assert client.retrieve(COLLECTION, ids=gone) == [], "deleted ids still retrievable"
    res = check_query(client, points, queries[0], limit=100, label="query after delete by ids")
    assert not set(gone) & {p.id for p in res}
    step(f"delete by ids {gone}")

    # --- delete by filter
    flt = models.Filter(must=[FC(key="city", match=models.MatchValue(value="Berlin"))])
    gone = [pid for pid, (_, p) in points.items() if passes(p, flt)]
    assert gone, "test data should contain Berlin points"
    r = client.delete(COLLECTION, points_selector=models.FilterSelector(filter=flt), wait=True)
    assert r.status == models.UpdateStatus.COMPLETED, r
    for pid in gone:
        del points[pid]
    assert client.retrieve(COLLECTION, ids=gone) == [], "filter-deleted ids still retrievable"
    res = check_query(client, points, queries[3], limit=100, label="query after delete by filter")
    assert all(p.payload["city"] != "Berlin" for p in res)
    step(f"delete by filter city=Berlin ({len(gone)} points)")

    # --- collection info and listing
    info = client.get_collection(COLLECTION)
    assert info.points_count == len(points), f"points_count {info.points_count} != {len(points)}"
    step(f"get_collection: status={info.status.value} points_count={info.points_count}")
    names = [c.name for c in client.get_collections().collections]
    assert COLLECTION in names, f"get_collections: {names}"
    step("get_collections lists qc_test")

    # --- auth
    if api_key:
        bad = QdrantClient(url=url, api_key=api_key + "-wrong", prefer_grpc=False,
                           check_compatibility=False, timeout=60)
        expect_status(bad.get_collections, (401, 403), "wrong API key rejected")
        expect_status(lambda: bad.query_points(COLLECTION, query=sparse(queries[0]), using=VECTOR),
                      (401, 403), "wrong API key rejected on query")
        anon = QdrantClient(url=url, prefer_grpc=False, check_compatibility=False, timeout=60)
        expect_status(lambda: anon.collection_exists(COLLECTION), (401, 403), "missing API key rejected")

    # --- delete collection
    assert client.delete_collection(COLLECTION) is True
    assert client.collection_exists(COLLECTION) is False
    assert COLLECTION not in [c.name for c in client.get_collections().collections]
    step("delete_collection")
    expect_status(lambda: client.get_collection(COLLECTION), (404,), "get_collection after delete")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    url = sys.argv[1]
    api_key = sys.argv[2] if len(sys.argv) == 3 else None
    try:
        run(url, api_key)
    except AssertionError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"FAIL {e or where.line} (line {where.lineno})", flush=True)
        raise SystemExit(1)
    except UnexpectedResponse as e:
        print(f"FAIL unexpected HTTP response: {e}", flush=True)
        raise SystemExit(1)
    except ResponseHandlingException as e:  # connection refused, timeout, unparsable response
        print(f"FAIL could not talk to {url} or parse its answer: {e.source!r}", flush=True)
        raise SystemExit(1)
    print("PASS qdrant-client compatibility", flush=True)


if __name__ == "__main__":
    main()
