import pandas as pd

from bench.tables import markdown_table, text_table


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["cnn", "resnet20"],
            "params": [360778, 272474],
            "ms": [1.5, float("nan")],
            "ok": [True, False],
            "note": ["a|b", None],
        }
    )


def test_markdown_table():
    assert markdown_table(frame()) == (
        "| model | params | ms | ok | note |\n"
        "| :--- | ---: | ---: | :--- | :--- |\n"
        "| cnn | 360778 | 1.5 | True | a\\|b |\n"
        "| resnet20 | 272474 |  | False |  |"
    )


def test_text_table_aligns_numbers_right_and_text_left():
    assert text_table(frame()).splitlines() == [
        "model     params   ms  ok     note",
        "--------  ------  ---  -----  ----",
        "cnn       360778  1.5  True   a|b",
        "resnet20  272474       False",
    ]
