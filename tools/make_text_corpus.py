#!/usr/bin/env python3
"""Makes the English training corpus of the default text models from Debian packages, and the held-out evaluation
file from the fortune packages (never used for training, validation or choosing anything).

Fetch the packages first (no other network access is needed):

    apt-get download nodejs-doc git-doc jargon-text perl-doc debian-reference-en gnu-standards wordnet-base \
        fortunes fortunes-min
    python3 tools/make_text_corpus.py --debs DIR --out SET

Training corpus (SET/corpus/), one file per source:
  jargon.txt        the Jargon File 4.4.7 (jargon-text): hacker slang, its definitions and stories
  perl.txt          every .pod of perl-doc (the Perl manual: tutorials, FAQ, reference)
  wordnet.txt       WordNet 3.0 (wordnet-base): "lemmas: gloss; examples", every second synset, one per line
  debian-reference.txt  the Debian Reference in plain text (debian-reference-en)
  gnu-standards.txt the GNU Coding Standards and "Information for Maintainers of GNU Software" (gnu-standards)
  nodejs.txt        the Markdown of the Node.js API documentation (nodejs-doc)
  git.txt           the AsciiDoc sources of Git's manual pages and guides (git-doc)
  python.txt        the help topics of Python's pydoc_data (the language reference as plain text)
  licenses.txt      /usr/share/common-licenses/* (base-files)
Evaluation (SET/fortunes.txt): the first --eval-bytes bytes of the fortune cookies of fortunes and fortunes-min.
"""
import argparse
import gzip
import subprocess
import tempfile
from pathlib import Path


def read(f):
    data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    return data.decode("utf-8", errors="replace").strip()


def join(files):
    return "\n\n".join(read(f) for f in sorted(files) if f.is_file() and not f.is_symlink()) + "\n"


def unpack(debs, name, into):
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        raise SystemExit(f"{debs}: no {name}_*.deb (apt-get download {name})")
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(into)], check=True)
    return into


def wordnet(root):
    lines = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (root / f"usr/share/wordnet/data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # the licence header
            fields = line.split(" ")
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(int(fields[3], 16))]
            words = [w.split("(")[0] for w in words]
            lines.append(f"{', '.join(words)}: {line.split('|', 1)[1].strip()}")
    return "\n".join(lines[::2]) + "\n"  # every second synset: glosses would otherwise be 44 % of the corpus


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--eval-bytes", type=int, default=200_000)
    a = ap.parse_args()
    corpus = a.out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def pkg(name):
            return unpack(a.debs, name, tmp / name)

        (corpus / "jargon.txt").write_text(read(pkg("jargon-text") / "usr/share/doc/jargon-text/jargon.txt.gz") + "\n")
        (corpus / "perl.txt").write_text(join((pkg("perl-doc") / "usr/share/perl").rglob("*.pod")))
        (corpus / "wordnet.txt").write_text(wordnet(pkg("wordnet-base")))
        ref = pkg("debian-reference-en") / "usr/share/debian-reference/debian-reference.en.txt.gz"
        (corpus / "debian-reference.txt").write_text(read(ref) + "\n")
        (corpus / "gnu-standards.txt").write_text(join((pkg("gnu-standards") / "usr/share/doc").rglob("*.text.gz")))
        node = pkg("nodejs-doc") / "usr/share/doc/nodejs"
        (corpus / "nodejs.txt").write_text(join(list(node.rglob("*.md")) + list(node.rglob("*.md.gz"))))
        (corpus / "git.txt").write_text(join((pkg("git-doc") / "usr/share/doc/git-doc").rglob("*.txt")))
        from pydoc_data.topics import topics

        (corpus / "python.txt").write_text("\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n")
        lic = Path("/usr/share/common-licenses")
        (corpus / "licenses.txt").write_text(join(p for p in lic.iterdir() if p.is_file()))
        pkg("fortunes")
        unpack(a.debs, "fortunes-min", tmp / "fortunes")
        files = [p for p in (tmp / "fortunes/usr/share/games/fortunes").rglob("*") if p.suffix != ".dat"]
        text = join(files).encode("utf-8")[: a.eval_bytes]
    (a.out / "fortunes.txt").write_bytes(text)
    for f in sorted(corpus.iterdir()):
        print(f, f.stat().st_size)
    print(a.out / "fortunes.txt", len(text))


if __name__ == "__main__":
    main()
