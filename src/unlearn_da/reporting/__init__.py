"""From metrics to what a reader sees: tables, verdicts, figures, DA-over-k curves, published vs
reproduced, and the expected-results files a run is checked against."""
