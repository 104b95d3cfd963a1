import pandas as pd

from bench.reporting.tables import format_number, html_table, latex_table, markdown_table, text_table


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


def test_format_number_rounds_for_reading():
    cases = [(360778, "360,778"), (360778.0, "360,778"), (32, "32"), (2285.714, "2,286"), (14.04, "14.0")]
    cases += [(4.0, "4.00"), (0.012345, "0.0123"), (123.4, "123"), (-7.25, "-7.25")]
    assert [(value, format_number(value)) for value, _ in cases] == cases


def test_markdown_table_with_rounded_numbers_keeps_them_right_aligned():
    table = markdown_table(pd.DataFrame({"model": ["cnn"], "ms": [14.04]}), format_number)
    assert table.splitlines()[1:] == ["| :--- | ---: |", "| cnn | 14.0 |"]


def test_latex_escapes_every_special_character():
    frame = pd.DataFrame({"name_with %": ["a&b_c $x$ #1 {y} ~z^ \\"], "ms": [0.012345]})
    tex = latex_table(frame, "50% of #runs", "tab:x")
    assert r"\caption{50\% of \#runs}" in tex
    assert r"\begin{tabular}{lr}" in tex
    assert r"name\_with \% & ms \\" in tex
    assert r"a\&b\_c \$x\$ \#1 \{y\} \textasciitilde{}z\textasciicircum{} \textbackslash{} & 0.0123 \\" in tex


def test_html_table_escapes_and_marks_numbers():
    table = html_table(pd.DataFrame({"<b>": ["a & b"], "ms": [14.04]}))
    assert table.splitlines() == [
        "<table>",
        "<tr><th>&lt;b&gt;</th><th class=num>ms</th></tr>",
        "<tr><td>a &amp; b</td><td class=num>14.0</td></tr>",
        "</table>",
    ]
