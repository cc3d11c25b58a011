using System.Buffers;
using System.Management.Automation.Language;

namespace Microsandbox.PowerShell;

/// <summary>How the argument completers write a value so that PowerShell reads it back unchanged.</summary>
internal static class CompletionText
{
    // Characters that end a bare word or give it another meaning in argument mode.
    private static readonly SearchValues<char> Special =
        SearchValues.Create("'\"`$&|;,(){}<>@#\u2018\u2019\u201A\u201B\u201C\u201D\u201E");

    /// <summary>The word as typed so far, without the quotes a user may have opened it with.</summary>
    public static string Unquote(string? word) => (word ?? "").Trim('\'', '"');

    /// <summary>
    /// <paramref name="value"/> as an argument: bare when it can be, else single-quoted with its
    /// single quotes doubled. A leading '-' would read as a parameter name, so it is quoted too.
    /// </summary>
    public static string Quote(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        bool bare = value.Length > 0 && value.AsSpan().IndexOfAny(Special) < 0
            && !value.StartsWith('-') && !value.Any(char.IsWhiteSpace);
        return bare ? value : $"'{CodeGeneration.EscapeSingleQuotedStringContent(value)}'";
    }
}
