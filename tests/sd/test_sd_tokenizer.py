"""CLIP BPE and ComfyUI's prompt syntax: ids, weights, escapes, chunks, embeddings, errors."""
import pytest
import torch

from vidgraph.nodes.sd.tokenizer import (END_TOKEN, START_TOKEN, PromptSyntaxError, Tokenizer, parse_prompt,
                                         shared_bpe, vocabulary)


def ids(chunk):
    return [t for t, _ in chunk]


def test_comfyuis_tokens_for_the_parity_prompts():
    """parity_sd/README.md in the reference material (bench/reference.py), case 1."""
    tokens = Tokenizer().tokenize("a red ball on a table")
    assert len(tokens) == 1 and len(tokens[0]) == 77
    assert ids(tokens[0])[:8] == [49406, 320, 736, 1069, 525, 320, 2175, 49407]
    assert ids(tokens[0])[8:] == [END_TOKEN] * 69
    assert ids(Tokenizer().tokenize("blurry")[0])[:3] == [49406, 21977, 49407]
    assert ids(Tokenizer(pad_token=0).tokenize("blurry")[0])[3:] == [0] * 74  # OpenCLIP's padding


@pytest.mark.parametrize("text", [
    "a red ball on a table", "photograph beautiful scenery nature mountains alps river rapids snow sky cumulus clouds",
    "text, watermark", "don't STOP believin'!! 1234 x-ray  multiple   spaces\tand\nlines", "emoji 😀 café naïve",
    "a_b.c/d\\e <tag> #hash @at", "",
])
def test_bpe_agrees_with_transformers_on_the_same_vocabulary(text):
    transformers = pytest.importorskip("transformers")
    encoder, ranks = vocabulary()
    merges = [pair for pair, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    reference = transformers.CLIPTokenizer(vocab=encoder, merges=merges)
    assert shared_bpe().encode(text) == reference(text)["input_ids"][1:-1]


def test_weights_follow_comfyuis_rules():
    assert parse_prompt("a (red:1.3) ((ball)) on (table:0.5)") == [
        ("a ", 1.0), ("red", 1.3), (" ", 1.0), ("ball", pytest.approx(1.21)), (" on ", 1.0), ("table", 0.5)]
    assert parse_prompt("(outer (inner:2.0) text)") == [("outer ", pytest.approx(1.1)), ("inner", 2.0),
                                                         (" text", pytest.approx(1.1))]
    assert parse_prompt("(a:b)") == [("a:b", pytest.approx(1.1))]  # not a number: the colon is text
    assert parse_prompt("[plain] brackets") == [("[plain] brackets", 1.0)]
    assert parse_prompt(r"smile \(happy\) \(:2\)") == [("smile (happy) (:2)", 1.0)]


@pytest.mark.parametrize("text, position", [("a (red ball", 3), ("a red) ball", 6), ("((a)", 1)])
def test_unbalanced_brackets_name_the_position(text, position):
    with pytest.raises(PromptSyntaxError) as caught:
        parse_prompt(text)
    assert caught.value.position == position - 1 and f"character {position}" in str(caught.value)


def test_weights_reach_the_tokens():
    chunk = Tokenizer().tokenize("a (red:1.5) ball")[0]
    assert chunk[:5] == [(START_TOKEN, 1.0), (320, 1.0), (736, 1.5), (1069, 1.0), (END_TOKEN, 1.0)]


def test_long_prompts_fill_chunks_of_75_and_short_groups_move_whole():
    words = " ".join(["cat"] * 100)  # one group of 100 tokens: split across chunks
    chunks = Tokenizer().tokenize(words)
    assert [len(c) for c in chunks] == [77, 77]
    assert ids(chunks[0])[0] == START_TOKEN and ids(chunks[0])[76] == END_TOKEN
    assert ids(chunks[0]).count(2368) == 75 and ids(chunks[1]).count(2368) == 25
    # a weighted group of 3 tokens that does not fit in the first chunk starts the second one
    text = " ".join(["cat"] * 74) + " (red ball bounce:1.2)"
    first, second = Tokenizer().tokenize(text)
    assert ids(first)[75:] == [END_TOKEN, END_TOKEN] and ids(first).count(2368) == 74
    assert [w for _, w in second[1:4]] == [1.2, 1.2, 1.2]


def test_embeddings_are_inserted_by_name_and_unknown_ones_ignored():
    vectors = torch.randn(2, 768)

    def lookup(name, size, key):
        return vectors if name == "myconcept" else None
    tokens = Tokenizer(embeddings=lookup).tokenize("a photo of embedding:myconcept, (embedding:missing:1.2) dog")
    chunk = tokens[0]
    assert ids(chunk)[:4] == [START_TOKEN, 320, 1125, 539]
    assert torch.equal(chunk[4][0], vectors[0]) and torch.equal(chunk[5][0], vectors[1])
    assert chunk[6][0] == 267  # the comma after the name is text again
    assert ids(chunk)[7:9] == [1929, END_TOKEN]  # 'dog'; the missing embedding left nothing
    # without an embeddings folder the words are plain text
    plain = shared_bpe().encode("embedding:x")
    assert ids(Tokenizer().tokenize("embedding:x")[0])[1:1 + len(plain)] == plain


def test_the_vocabulary_is_read_from_the_first_package_with_an_intact_copy(tmp_path, monkeypatch, caplog):
    """open-clip-torch's copy is preferred when installed; a damaged copy is skipped with a warning;
    the packages' code is never imported (find_spec only)."""
    import importlib
    import shutil
    import sys

    from vidgraph.nodes.sd.tokenizer import VOCAB_FILE, VOCAB_SHA256, _sha256, vocab_path

    shipped = vocab_path()
    assert _sha256(shipped) == VOCAB_SHA256
    fake = tmp_path / "fake_open_clip"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (fake / VOCAB_FILE).write_bytes(b"not the vocabulary")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with caplog.at_level("WARNING"):
        assert vocab_path(("fake_open_clip", "clip")) == shipped
    assert "not CLIP's BPE vocabulary" in caplog.text
    shutil.copyfile(shipped, fake / VOCAB_FILE)
    assert vocab_path(("fake_open_clip", "clip")) == fake / VOCAB_FILE
    assert "fake_open_clip" not in sys.modules
