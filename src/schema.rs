// Diesel table definitions, matching migrations/ (shared by SQLite and PostgreSQL).

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        password_hash -> Text,
        display_name -> Text,
        avatar_url -> Nullable<Text>,
        city -> Nullable<Text>,
        role -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        rotated_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        session_id -> Nullable<Text>,
    }
}

diesel::table! {
    issues (id) {
        id -> Text,
        title -> Text,
        description -> Text,
        city -> Text,
        category -> Text,
        priority -> Text,
        status -> Text,
        upvotes -> BigInt,
        reported_by -> Text,
        assigned_to -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    upvotes (issue_id, user_id) {
        issue_id -> Text,
        user_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        issue_id -> Text,
        author_id -> Text,
        content -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    reactions (message_id, user_id, emoji) {
        message_id -> Text,
        user_id -> Text,
        emoji -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(upvotes -> issues (issue_id));
diesel::joinable!(messages -> issues (issue_id));
diesel::joinable!(messages -> users (author_id));
diesel::joinable!(reactions -> messages (message_id));

diesel::allow_tables_to_appear_in_same_query!(users, refresh_tokens, issues, upvotes, messages, reactions);
