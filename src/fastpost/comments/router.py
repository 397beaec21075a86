"""HTTP routes: /posts/{post_id}/comments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Response, status

from fastpost.comments import service
from fastpost.comments.schemas import CommentCreate, CommentOut, CommentPage
from fastpost.db import DatabaseDep
from fastpost.errors import error_responses
from fastpost.ids import MAX_ID
from fastpost.pagination import PageQuery
from fastpost.posts.queries import PostRef
from fastpost.responses import json_response
from fastpost.routing import PrefixRouter
from fastpost.security import CurrentUserId, OptionalUserId

router = PrefixRouter(prefix="/posts", tags=["comments"])

PostIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Post id")]
CommentIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Comment id")]


@router.get(
    "/{post_id}/comments",
    response_model=CommentPage,
    responses=error_responses(401, 404, 422),
)
async def list_comments(
    post_id: PostIdPath, db: DatabaseDep, viewer_id: OptionalUserId, params: PageQuery
) -> Response:
    """A post's comments, oldest first, with their authors; keyset-paginated by
    `next_cursor`."""
    return json_response(
        await service.list_comments_page(
            db=db, post_id=post_id, viewer_id=viewer_id, page=params.to_page()
        )
    )


@router.post(
    "/{post_id}/comments",
    response_model=CommentOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 404, 413, 422),
)
async def add_comment(
    post_id: PostIdPath, body: CommentCreate, user_id: CurrentUserId, db: DatabaseDep
) -> Any:
    """Comment on a post as the caller."""
    row = await service.add_comment(
        db=db, post=PostRef.by_id(post_id), author_id=user_id, body=body.body
    )
    return service.comment_dict(row)


@router.delete(
    "/{post_id}/comments/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_comment(
    post_id: PostIdPath, comment_id: CommentIdPath, user_id: CurrentUserId, db: DatabaseDep
) -> None:
    """Delete a comment (its author only)."""
    await service.delete_comment(
        db=db, post=PostRef.by_id(post_id), comment_id=comment_id, user_id=user_id
    )
