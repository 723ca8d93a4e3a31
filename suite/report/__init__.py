"""Reports: MLflow runs → tidy frames → statistics, figures, Markdown and PDF."""
