"""Hypothesis strategies for hostile etcd values: what a buggy agent or a careless operator writes.

Deep nesting of arrays and objects, values from 0 bytes to about etcd's request limit, bytes that
are not UTF-8, lone surrogates in escapes, a BOM, NaN and Infinity, duplicate keys, numbers where
strings belong and strings where booleans belong, long non-ASCII text in every string field.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

#: long non-ASCII text: CJK, astral (12 bytes as a JSON escape), combining marks
non_ascii = st.text(alphabet=st.sampled_from("\u6f22\u5b57\U0001f600\u0301\u00e9\u200b\u0000 a\"\\"),
                    min_size=0, max_size=3000)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=50), non_ascii)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4)),
                           max_leaves=12)


@st.composite
def deep(draw) -> bytes:
    depth = draw(st.sampled_from([33, 100, 1000, 20_000, 200_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")]))
    closed = draw(st.booleans())
    return (opener * depth + ("1" + closer * depth if closed else "")).encode()


@st.composite
def field_values(draw) -> bytes:
    """A cluster/DR/record/stamp/switchover-shaped object whose fields hold wrong or hostile values."""
    names = ["allocated", "dr_site", "replication", "state", "reason", "cluster_revision", "dr_revision",
             "term", "updated_at", "lease", "instance_id", "to", "from_term", "until", "http"]
    fields = draw(st.dictionaries(st.sampled_from(names), json_values, min_size=1, max_size=6))
    ascii_only = draw(st.booleans())
    return json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


special = st.sampled_from([
    b"", b" ", b"null", b"NaN", b"Infinity", b"-Infinity", b'{"allocated": NaN}', b"1e999999",
    b'{"allocated": true, "allocated": false}', b'{"replication": "in_sync", "replication": "broken"}',
    b"\xef\xbb\xbf{\"allocated\": true}", b'{"allocated": true, "dr_site": "\\ud800"}',
    b'{"replication": "\\udfff"}', b'{"allocated": "true"}', b'{"allocated": 1}', b'{"dr_site": 5}',
    b'{"allocated": true, "dr_site": ""}', b"\xff\xfe\x00", b'"\xc3\x28"', b"[]", b"{}", b"42", b'"x"',
    b'{"term": "7", "lease": 5}', b'{"term": 1, "lease": "zz"}', b'{"from_term": 1e400, "until": "x"}',
])

binary = st.binary(min_size=0, max_size=2048)


@st.composite
def huge(draw) -> bytes:
    size = draw(st.sampled_from([70_000, 300_000, 1_200_000]))
    kind = draw(st.sampled_from(["site", "text", "array"]))
    if kind == "site":
        return json.dumps({"allocated": True, "dr_site": "\u6f22" * (size // 3)}, ensure_ascii=False).encode()
    if kind == "text":
        return b'"' + b"x" * size + b'"'
    return b"[" + b"1," * (size // 2) + b"1]"


#: any hostile value (bytes, as etcd stores them)
hostile = st.one_of(special, deep(), binary, field_values(), huge(),
                    json_values.map(lambda v: json.dumps(v).encode()))
