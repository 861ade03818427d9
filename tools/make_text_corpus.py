#!/usr/bin/env python3
"""Makes the English training corpus of the default text models from text already on a Debian machine, and the
held-out evaluation file from the fortune packages (never used for training, validation or choosing anything).

Training corpus (OUT/corpus/):
  nodejs.txt    every Markdown file of /usr/share/doc/nodejs (the Node.js API documentation; package nodejs-doc
                or nodejs), joined
  git.txt       every .txt file of /usr/share/doc/git (Git's manual pages and guides in AsciiDoc)
  python.txt    the help topics of Python's pydoc_data (the language reference as plain text)
  licenses.txt  /usr/share/common-licenses/*
Evaluation (OUT/fortunes.txt): the first --eval-bytes bytes of the fortune cookies of the Debian packages
fortunes and fortunes-min, fetched with `apt-get download fortunes fortunes-min` into --debs and unpacked here.

    python3 tools/make_text_corpus.py --debs DIR --out DIR
"""
import argparse
import subprocess
import tempfile
from pathlib import Path


def join(files):
    parts = []
    for f in sorted(files):
        try:
            parts.append(f.read_text(encoding="utf-8", errors="replace").strip())
        except OSError as e:
            print(f"skip {f}: {e}")
    return "\n\n".join(parts) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--eval-bytes", type=int, default=200_000)
    a = ap.parse_args()
    corpus = a.out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    doc = Path("/usr/share/doc")
    (corpus / "nodejs.txt").write_text(join((doc / "nodejs").rglob("*.md")))
    (corpus / "git.txt").write_text(join((doc / "git").rglob("*.txt")))
    from pydoc_data.topics import topics

    (corpus / "python.txt").write_text("\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n")
    (corpus / "licenses.txt").write_text(join(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file()))
    with tempfile.TemporaryDirectory() as tmp:
        for deb in sorted(a.debs.glob("fortunes*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        files = [p for p in (Path(tmp) / "usr/share/games/fortunes").rglob("*") if p.is_file() and p.suffix != ".dat"]
        files = [p for p in files if not p.is_symlink()]
        text = join(files).encode("utf-8")[: a.eval_bytes]
    (a.out / "fortunes.txt").write_bytes(text)
    for f in sorted(corpus.iterdir()):
        print(f, f.stat().st_size)
    print(a.out / "fortunes.txt", len(text))


if __name__ == "__main__":
    main()
