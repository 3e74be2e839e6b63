#!/usr/bin/env python3
"""Reference baseline for `triage eval --baseline`: TF-IDF character 1-3-grams + LinearSVC
(scikit-learn), trained on the training files, scored on the test file. Prints one JSON line.

    python3 scripts/baseline_svm.py --train T.jsonl [T2.jsonl …] --test E.jsonl

Text = title + "\\n" + text (the title alone when there is no text), as triage reads it.
Exits 3 when scikit-learn is missing, so the caller can say it was skipped.
"""
import argparse, json, sys, time

try:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.svm import LinearSVC
except ImportError:
    print(json.dumps({"skipped": "scikit-learn not installed (pip install scikit-learn)"}))
    sys.exit(3)


def read(paths):
    texts, labels = [], []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                title, text, label = (row.get("title") or "").strip(), (row.get("text") or "").strip(), row.get("label")
                if not label or not (title or text):
                    continue
                full = text if not title or text.startswith(title) else f"{title}\n{text}"
                texts.append(full or title)
                labels.append(label)
    return texts, labels


parser = argparse.ArgumentParser()
parser.add_argument("--train", nargs="+", required=True)
parser.add_argument("--test", required=True)
args = parser.parse_args()
started = time.time()
x_train, y_train = read(args.train)
x_test, y_test = read([args.test])
vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
model = LinearSVC(C=1.0).fit(vectorizer.fit_transform(x_train), y_train)
predicted = model.predict(vectorizer.transform(x_test))
print(json.dumps({
    "name": "TF-IDF char 1-3 + LinearSVC (scikit-learn)",
    "n": len(y_test),
    "accuracy": accuracy_score(y_test, predicted),
    "macro_f1": f1_score(y_test, predicted, average="macro"),
    "seconds": round(time.time() - started, 2),
}))
