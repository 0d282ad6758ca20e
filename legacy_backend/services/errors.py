class ApiError(Exception):
    """An error answer: status and a human message, rendered as {"detail": message}."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
