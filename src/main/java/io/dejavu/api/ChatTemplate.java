package io.dejavu.api;

import java.util.List;

/**
 * OPT was trained on plain text and has no chat format, so a conversation is written as a plain transcript with a
 * role prefix per message, ending with the assistant's turn for the model to continue:
 *
 * <pre>
 * System: You are terse.
 * User: Hello
 * Assistant: Hi.
 * User: What is a verb?
 * Assistant:
 * </pre>
 *
 * Generation stops where the model starts the user's next line ({@link #STOPS}), so the reply holds only the
 * assistant's turn; that line is not returned.
 */
final class ChatTemplate {
    /** Roles as the OpenAI API names them, with their transcript prefix. */
    static final List<String> ROLES = List.of("system", "user", "assistant");
    static final List<String> STOPS = List.of("\nUser:");

    record Message(String role, String content) {
    }

    private ChatTemplate() {
    }

    static String render(List<Message> messages) {
        StringBuilder text = new StringBuilder();
        for (Message message : messages) {
            text.append(prefix(message.role())).append(' ').append(message.content().strip()).append('\n');
        }
        return text.append(prefix("assistant")).toString();
    }

    private static String prefix(String role) {
        return Character.toUpperCase(role.charAt(0)) + role.substring(1) + ":";
    }
}
