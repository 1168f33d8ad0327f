"""Planning: predicted costs (_cost/), batches balanced by cost (plan, balance), the queue of K
workers and how many batches (queue), and the plan's predictions (result)."""
