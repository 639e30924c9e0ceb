"""The verdict over a sweep's arms: repeats and controls, paired statistics corrected for the
family, the MDE and the planner's power, the Pareto front.
"""
