import matplotlib.pyplot as plt

from bench.figures import COLUMN, save, use_theme


def test_save_writes_png_and_pdf_and_closes(tmp_path):
    use_theme()
    figure, axes = plt.subplots(figsize=(COLUMN, 2.5))
    axes.plot([1, 2, 3], [1, 4, 9])
    paths = save(figure, tmp_path / "figures" / "square")
    assert [p.name for p in paths] == ["square.png", "square.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert not plt.fignum_exists(figure.number)
