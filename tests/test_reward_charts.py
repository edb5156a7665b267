"""Reward-curve charts: runs drawn together share one y-axis, which stays inside the reward's known range."""
import numpy as np

from samplers.plots import PALETTE, reward_curves_chart, reward_y_range

TOP, BOTTOM = 36, 56  # line_chart's plot margins (440 px high by default)


def history(values, std=0.0):
    return [{"iteration": i, "reward_mean": v, "reward_std": std} for i, v in enumerate(values)]


def series_row(image, colour):
    """Median row of the pixels drawn exactly in ``colour`` (a series' line and markers)."""
    rows, _ = np.nonzero(np.all(np.abs(image - np.array(colour) / 255.0) < 1e-3, axis=-1))
    assert rows.size, f"no pixel of colour {colour}"
    return float(np.median(rows))


def test_runs_in_one_chart_share_the_y_axis():
    low, high = history([0.2] * 6), history([0.8] * 6)
    lo, hi = reward_y_range([low, high])
    assert lo < 0.2 and hi > 0.8  # covers both runs
    image = reward_curves_chart([("low", low), ("high", high)], value_range=(0.0, 1.0))[0].numpy()
    height = image.shape[0]
    plot_h = height - TOP - BOTTOM

    def expected(v):
        return TOP + (1 - (v - lo) / (hi - lo)) * plot_h

    assert abs(series_row(image, PALETTE[0]) - expected(0.2)) <= 3
    assert abs(series_row(image, PALETTE[1]) - expected(0.8)) <= 3


def test_the_axis_stays_inside_the_known_range():
    wide = history([0.05, 0.5, 0.97], std=0.3)  # mean ± std reaches below 0 and above 1
    assert reward_y_range([wide], (0.0, 1.0)) == (0.0, 1.0)
    assert reward_y_range([wide], (0.0, None))[0] == 0.0
    assert reward_y_range([wide], (0.0, None))[1] > 1.0
    assert reward_y_range([wide])[0] < 0.0  # unknown range: the data decide
    flat = reward_y_range([history([1.0, 1.0])], (0.0, 1.0))
    assert flat[1] == 1.0 and 0.0 <= flat[0] < 1.0
    # a band beyond the range is clipped at the plot's edge, not drawn outside it
    image = reward_curves_chart([("wide", wide)], value_range=(0.0, 1.0))[0].numpy()
    assert image.shape == (440, 720, 3)
