"""The TOML writer, checked by the standard library's TOML reader."""

import math
import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.toml_writer import dumps

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    text,
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3))
documents = st.dictionaries(
    text,
    st.one_of(
        values,
        st.dictionaries(text, values, max_size=4),
        st.lists(st.dictionaries(text, values, max_size=3), min_size=1, max_size=3),
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(documents)
def test_what_is_written_reads_back_the_same(document):
    assert tomllib.loads(dumps(document)) == document


def test_a_suite_shaped_document_reads_as_written():
    document = {
        "suite": {"name": "x", "steps": 3, "detailed": False, "note": 'quote " and \\ and \x7f'},
        "grid": [{"models": ["cnn"], "batch_sizes": [32, 64]}, {"models": ["resnet20"], "precision": ["bf16"]}],
        "rf": {"inputs": {"size": 32}, "probe": [1.5, -2e-9]},
    }
    text = dumps(document)
    assert "[suite]" in text and text.count("[[grid]]") == 2 and "[rf]" in text
    assert tomllib.loads(text) == document


def test_non_finite_floats():
    parsed = tomllib.loads(dumps({"a": math.inf, "b": -math.inf, "c": math.nan}))
    assert parsed["a"] == math.inf and parsed["b"] == -math.inf and math.isnan(parsed["c"])
