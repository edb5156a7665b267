"""OCR reward with the real rapidocr models on text rendered with Pillow."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from training.rewards import RewardError
from training.rewards.ocr import levenshtein, ocr_score, quoted_target

pytest.importorskip("rapidocr", reason="pip install rapidocr onnxruntime")


def rendered(text: str, size=512) -> torch.Tensor:
    canvas = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(canvas).text((40, size // 2 - 40), text, fill="black", font=ImageFont.load_default(size=64))
    return torch.from_numpy(np.asarray(canvas).copy()).float() / 255


@pytest.fixture(scope="module")
def reward():
    from training.rewards import OCRReward
    return OCRReward()


def test_exact_target_scores_one_and_misspelled_target_scores_its_edit_distance(reward):
    images = torch.stack([rendered("Hello World"), rendered("Hello World"), rendered("FLOW CPS")])
    prompts = ['a sign that says "Hello World"', "a sign that says 'Helo Wrld'", 'a poster with “flow cps” on it']
    result = reward.evaluate(images, prompts)
    assert result.details["text"][0].replace(" ", "").lower() == "helloworld"
    assert result.details["target"] == ["Hello World", "Helo Wrld", "flow cps"]
    # recognised "helloworld" vs target "helowrld": 2 insertions → 1 − 2/8
    assert result.rewards.tolist() == pytest.approx([1.0, 1 - 2 / 8, 1.0])


def test_blank_image_scores_zero_and_prompt_without_quotes_is_a_clear_error(reward):
    blank = torch.ones(1, 256, 256, 3)
    assert reward(blank, ['"anything"']).tolist() == [0.0]
    with pytest.raises(RewardError, match="needs the text to render in quotes"):
        reward(blank, ["a sign with no quoted text"])


def test_text_helpers():
    assert quoted_target('say "a b" and "c"') == "a b"
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3
    assert ocr_score("xx HELLO yy", "hello") == 1.0  # substring counts as exact
    assert ocr_score("zzzzzzzzzzzz", "ab") == 0.0  # distance above the length clips to 0
