"""OCR reward with the real rapidocr models on text rendered with Pillow, with the network switched off."""
import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from training.rewards import RewardError
from training.rewards.ocr import levenshtein, make_engine, ocr_score, quoted_target


def rendered(text: str, size=512) -> torch.Tensor:
    canvas = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(canvas).text((40, size // 2 - 40), text, fill="black", font=ImageFont.load_default(size=64))
    return torch.from_numpy(np.asarray(canvas).copy()).float() / 255


def no_network(*args, **kwargs):
    raise AssertionError("the OCR reward tried to open a network connection")


@pytest.fixture(scope="module")
def reward():
    pytest.importorskip("rapidocr", reason="pip install rapidocr onnxruntime")
    from training.rewards import OCRReward
    with pytest.MonkeyPatch.context() as patch:  # construction and every read below run offline
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        patch.setattr(socket, "getaddrinfo", no_network)
        yield OCRReward()


def test_exact_target_scores_one_and_misspelled_target_scores_its_edit_distance(reward):
    images = torch.stack([rendered("Hello World"), rendered("Hello World"), rendered("FLOW CPS")])
    prompts = ['a sign that says "Hello World"', "a cat's sign that says 'Helo Wrld'", 'a poster with “flow cps” on it']
    result = reward.evaluate(images, prompts)
    assert result.details["text"][0].replace(" ", "").lower() == "helloworld"
    assert result.details["target"] == ["Hello World", "Helo Wrld", "flow cps"]
    # recognised "helloworld" vs target "helowrld": 2 insertions → 1 − 2/8
    assert result.rewards.tolist() == pytest.approx([1.0, 1 - 2 / 8, 1.0])
    # a target that is not a substring: "hellowarld" (one substitution) → 1 − 1/10
    assert reward(images[:1], ['"Hello Warld"']).tolist() == pytest.approx([0.9])


def test_blank_image_scores_zero_and_prompt_without_quotes_is_a_clear_error(reward):
    blank = torch.ones(1, 256, 256, 3)
    result = reward.evaluate(blank, ['"anything"'])
    assert result.rewards.tolist() == [0.0] and result.details["text"] == [""]
    with pytest.raises(RewardError, match=r"needs the text to render in quotes.*e\.g\. .*\"OPEN 24/7\""):
        reward(blank, ["a sign with no quoted text"])


def test_engine_is_cpu_without_the_angle_classifier_on_the_bundled_models(reward):
    import rapidocr
    cfg = reward.engine.cfg
    assert cfg.Global.use_cls is False and cfg.EngineConfig.onnxruntime.use_cuda is False
    package = rapidocr.__file__.rsplit("__init__.py", 1)[0]
    assert cfg.Det.model_path.startswith(package) and cfg.Rec.model_path.startswith(package)


def test_grey_and_rgba_text_read_like_rgb(reward):
    image = rendered("FLOW CPS")[None]
    rgba = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)
    assert reward(image[..., :1], ['"flow cps"']).tolist() == [1.0]
    assert reward(rgba, ['"flow cps"']).tolist() == [1.0]


def test_missing_rapidocr_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # makes `import rapidocr` raise ImportError
    with pytest.raises(ImportError, match="pip install rapidocr onnxruntime"):
        make_engine()
    with pytest.raises(RewardError, match="pip install rapidocr onnxruntime"):
        make_engine()


def test_text_helpers():
    assert quoted_target('say "a b" and "c"') == "a b"
    assert quoted_target("a cat's sign that says 'HELLO'") == "HELLO"  # apostrophes are not quotes
    assert quoted_target("a sign: 'Joe's Diner' at night") == "Joe's Diner"
    assert quoted_target("a banner with ‘Grand Opening’") == "Grand Opening"
    with pytest.raises(RewardError, match="in quotes"):
        quoted_target("the dog's bowl")
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert ocr_score("xx HELLO yy", "hello") == 1.0  # substring counts as exact
    assert ocr_score("Helo", "hello") == pytest.approx(0.8)  # one insertion over five characters
    assert ocr_score("zzzzzzzzzzzz", "ab") == 0.0  # distance above the length clips to 0
    assert ocr_score("", "abcd") == 0.0
    with pytest.raises(RewardError, match="empty"):
        ocr_score("abc", "   ")
