"""KroSBL posterior: is the m_i × m_i eigenproblem cheaper than the a_i × a_i one?

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_krosbl_eigh.py [--rows 8 16 32] [--repeats 40]

Where a factor has more active entries a_i than rows m_i, B_i = K_iᵀK_i (K_i = Φ_i Γ_i^{1/2},
m_i × a_i) has rank m_i, and an orthogonal eigenbasis of B_i follows from a complete QR of
K_iᵀ (Q R = K_iᵀ) and the m_i × m_i eigenproblem of R Rᵀ: [Q_2, Q_1 V] for the eigenvalues
[0, w]. Per size the table gives the median time (process time, ``--repeats`` rounds of 20
calls, the two routes interleaved) of ``np.linalg.eigh`` of B_i (what KroneckerSBL does)
and of that route (``np.linalg.qr(..., mode="complete")``, ``np.linalg.eigh`` of R Rᵀ,
one product), on Gaussian factors with a random positive scale per column.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def direct(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of KᵀK by ``np.linalg.eigh`` of the a × a matrix."""
    return np.linalg.eigh(K.T @ K)


def reduced(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same through a complete QR of Kᵀ and the m × m eigenproblem of R Rᵀ."""
    m = K.shape[0]
    Q, R = np.linalg.qr(K.T, mode="complete")
    R = R[:m]
    w, V = np.linalg.eigh(R @ R.T)
    values = np.concatenate([np.zeros(K.shape[1] - m), w])
    return values, np.concatenate([Q[:, m:], Q[:, :m] @ V], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 16, 32], help="m_i")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average before: {os.getloadavg()}")
    print("| m_i | a_i | eigh a_i × a_i, µs | QR + eigh m_i × m_i, µs | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for m in args.rows:
        for a in sorted({m + 2, m + m // 4, (3 * m) // 2, 2 * m}):
            K = rng.standard_normal((m, a)) * np.sqrt(rng.uniform(0.01, 1.0, a))
            w0 = direct(K)[0]
            w1, U1 = reduced(K)
            # the same eigenvalues, an orthogonal basis
            assert np.allclose(np.maximum(w0, 0.0), w1, atol=1e-12 * w0.max())
            assert np.allclose(U1.T @ U1, np.eye(a), atol=1e-12)
            times: dict[str, list[float]] = {"direct": [], "reduced": []}
            for _ in range(args.repeats):
                for name, route in (("direct", direct), ("reduced", reduced)):
                    start = time.process_time()
                    for _ in range(20):
                        route(K)
                    times[name].append((time.process_time() - start) / 20)
            old, new = (1e6 * float(np.median(times[k])) for k in times)
            print(f"| {m} | {a} | {old:.0f} | {new:.0f} | {old / new:.2f}× |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
