"""The method in plain torch: data, masking strategies, models, losses, the training steps
and the pure scorer. Nothing here imports Ray or MLflow.
"""
