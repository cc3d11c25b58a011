using System.Security.Cryptography;
using System.Text;

namespace Microsandbox.Engine;

/// <summary>The rules names, labels and sizes must follow, checked before anything is written.</summary>
public static class SandboxRules
{
    /// <summary>The longest name, in UTF-8 bytes.</summary>
    public const int MaxNameBytes = 128;

    /// <summary>Label key prefixes kept for the product's own labels.</summary>
    public static readonly IReadOnlyList<string> ReservedLabelPrefixes = ["sandbox.", "microsandbox.", "service."];

    /// <summary>
    /// A fresh name for a sandbox created without one, as Docker names containers: the image's
    /// repository name (or folder or file name) and six random hex digits, such as <c>python-3fa81c</c>.
    /// </summary>
    public static string GenerateName(string image)
    {
        ArgumentNullException.ThrowIfNull(image);
        string stem = image.TrimEnd('/', '\\');
        int at = stem.IndexOf('@', StringComparison.Ordinal);
        stem = at < 0 ? stem : stem[..at];
        stem = stem[(stem.LastIndexOfAny(['/', '\\']) + 1)..];
        int colon = stem.IndexOf(':', StringComparison.Ordinal);
        stem = colon < 0 ? stem : stem[..colon];
        stem = new string([.. stem.Where(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')]);
        if (stem.Length == 0 || stem.All(c => c == '.'))
        {
            stem = "sandbox";
        }

        string suffix = Convert.ToHexString(RandomNumberGenerator.GetBytes(3)).ToLowerInvariant();
        return $"{stem[..Math.Min(stem.Length, 40)]}-{suffix}";
    }

    /// <summary>Throws <see cref="SandboxException"/> unless <paramref name="name"/> is a valid sandbox name.</summary>
    public static void ValidateName(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            throw new SandboxException("SandboxNameEmpty", SandboxErrorKind.InvalidArgument,
                "A sandbox name cannot be empty.", name ?? "");
        }

        int bytes = Encoding.UTF8.GetByteCount(name);
        if (bytes > MaxNameBytes)
        {
            throw new SandboxException("SandboxNameTooLong", SandboxErrorKind.InvalidArgument,
                $"The sandbox name is {bytes} UTF-8 bytes long; the limit is {MaxNameBytes}.", name);
        }

        if (name.Any(char.IsControl))
        {
            throw new SandboxException("SandboxNameInvalid", SandboxErrorKind.InvalidArgument,
                "A sandbox name cannot contain control characters.", name);
        }
    }

    /// <summary>Throws unless every label key is non-empty and outside the reserved prefixes.</summary>
    public static void ValidateLabels(IEnumerable<KeyValuePair<string, string>> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        foreach (var (key, _) in labels)
        {
            if (string.IsNullOrWhiteSpace(key) || key != key.Trim())
            {
                throw new SandboxException("InvalidLabelKey", SandboxErrorKind.InvalidArgument,
                    "A label key cannot be empty or begin or end with white space.", key);
            }

            string? prefix = ReservedLabelPrefixes.FirstOrDefault(p => key.StartsWith(p, StringComparison.Ordinal));
            if (prefix is not null)
            {
                throw new SandboxException("ReservedLabelKey", SandboxErrorKind.InvalidArgument,
                    $"The label key '{key}' uses the reserved prefix '{prefix}'.", key);
            }
        }
    }

    /// <summary>Throws unless the CPU count and memory size are usable.</summary>
    public static void ValidateResources(int cpus, int memoryMB)
    {
        if (cpus < 1)
        {
            throw new SandboxException("InvalidCpuCount", SandboxErrorKind.InvalidArgument,
                $"A sandbox needs at least one CPU; {cpus} was asked for.", cpus);
        }

        if (memoryMB < 64)
        {
            throw new SandboxException("InvalidMemorySize", SandboxErrorKind.InvalidArgument,
                $"A sandbox needs at least 64 MiB of memory; {memoryMB} was asked for.", memoryMB);
        }
    }

    /// <summary>
    /// Parses a label selector term: <c>key=value</c> matches that pair, <c>key</c> matches the key
    /// with any value.
    /// </summary>
    public static LabelSelector ParseSelector(string term)
    {
        ArgumentNullException.ThrowIfNull(term);
        // Split at the first '=' as labels are parsed, so any label that can be set can be selected.
        int eq = term.IndexOf('=', StringComparison.Ordinal);
        string key = eq < 0 ? term : term[..eq];
        if (key.Trim().Length == 0 || key != key.Trim())
        {
            throw new SandboxException("InvalidLabelSelector", SandboxErrorKind.InvalidArgument,
                $"'{term}' is not a label selector; use key=value or key, with no spaces around the key.", term);
        }

        return new LabelSelector(key, eq < 0 ? null : term[(eq + 1)..]);
    }

    /// <summary>
    /// Parses the terms of a label selector as a cmdlet's <c>-Label</c> takes them: every string may
    /// hold several terms joined by commas (<c>'app=engine,tier=web'</c>, as a CI variable carries
    /// them), each read by <see cref="ParseSelector"/>. A value cannot hold a comma here; such a
    /// label is selected by its key alone.
    /// </summary>
    public static IReadOnlyList<LabelSelector> ParseSelectors(IEnumerable<string> terms)
    {
        ArgumentNullException.ThrowIfNull(terms);
        var selectors = new List<LabelSelector>();
        foreach (string text in terms)
        {
            ArgumentNullException.ThrowIfNull(text);
            foreach (string term in text.Split(','))
            {
                try
                {
                    selectors.Add(ParseSelector(term));
                }
                catch (SandboxException) when (term != text)
                {
                    throw new SandboxException("InvalidLabelSelector", SandboxErrorKind.InvalidArgument,
                        $"'{text}' is not a label selector: its term '{term}' is malformed; use key=value or key, "
                        + "with no spaces around the key, and commas only between terms.", text);
                }
            }
        }

        return selectors;
    }

    /// <summary>Parses a label argument: <c>key=value</c>, or <c>key</c> for a valueless label.</summary>
    public static KeyValuePair<string, string> ParseLabel(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int eq = text.IndexOf('=', StringComparison.Ordinal);
        return eq < 0 ? new(text, "") : new(text[..eq], text[(eq + 1)..]);
    }
}

/// <summary>One term of a label selector; a null value matches any value of the key.</summary>
/// <param name="Key">The label key.</param>
/// <param name="Value">The value to match, or null for any.</param>
public sealed record LabelSelector(string Key, string? Value)
{
    /// <summary>Whether a sandbox with these labels satisfies this term.</summary>
    public bool Matches(IReadOnlyDictionary<string, string> labels) =>
        labels is not null && labels.TryGetValue(Key, out string? v) && (Value is null || v == Value);

    /// <inheritdoc/>
    public override string ToString() => Value is null ? Key : $"{Key}={Value}";
}
