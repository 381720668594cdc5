"""Map-quality metrics behave as defined on maps whose answer is known."""
import numpy as np

from paric.eval.map_quality import energy_in_mask, mask_area, pointing_game, summarise


def _mask():
    m = np.zeros((2, 16, 16), dtype=np.uint8)
    m[:, 4:8, 4:8] = 1
    return m


def test_energy_of_perfect_uniform_and_zero_maps():
    masks = _mask()
    inside = np.zeros((2, 4, 4), dtype=np.float32)
    inside[:, 1, 1] = 1.0  # the 4x4 cell covering pixels 4..7
    e = energy_in_mask(inside, masks)
    assert (e > 0.5).all()
    uni = energy_in_mask(np.ones((2, 4, 4), np.float32), masks)
    np.testing.assert_allclose(uni, mask_area(masks), atol=1e-6)
    assert np.isnan(energy_in_mask(np.zeros((2, 4, 4), np.float32), masks)).all()


def test_pointing_game_hits_and_misses():
    masks = _mask()
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, 1, 1] = 1.0  # on the object
    maps[1, 3, 3] = 1.0  # off the object
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 0.0])
    assert pointing_game(np.zeros((2, 4, 4), np.float32), masks).sum() == 0


def test_summary_has_uniform_baseline():
    s = summarise({"det": np.ones((2, 4, 4), np.float32)}, _mask())
    assert s["energy_in_mask"]["uniform"] == mask_area(_mask()).mean()
    assert abs(s["energy_in_mask"]["det"] - s["energy_in_mask"]["uniform"]) < 1e-6


def test_a_tie_for_the_maximum_inside_the_mask_is_a_hit():
    """Issue 28 item 8 (GALS, Quantus): the old argmax took the first plateau pixel in memory order, so a
    plateau that starts above the object and reaches into it was a miss."""
    masks = np.zeros((2, 16, 16), dtype=np.uint8)
    masks[:, 8:12, 4:8] = 1
    plateau = np.zeros((2, 16, 16), np.float32)
    plateau[0, 0:12, 4:8] = 1.0  # from the top edge down into the object: first argmax (row 0) is outside
    plateau[1, 0:6, 4:8] = 1.0  # stops above the object: a miss either way
    np.testing.assert_array_equal(pointing_game(plateau, masks), [1.0, 0.0])
    # a uniform map is one plateau: it points at every non-empty mask, and the summary says so
    masks[1] = 0
    s = summarise({"det": plateau}, masks)
    assert s["pointing_game"]["uniform"] == 0.5
    assert s["pointing_game"]["det"] == 0.5  # image 1 has no object: a miss
