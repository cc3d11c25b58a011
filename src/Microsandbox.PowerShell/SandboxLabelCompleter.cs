using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// Completes label selectors from the labels of existing sandboxes: a word without '=' to the
/// keys that start with it and their key=value pairs, a word with '=' to the values of its key.
/// </summary>
public sealed class SandboxLabelCompleter : IArgumentCompleter
{
    /// <inheritdoc/>
    public IEnumerable<CompletionResult> CompleteArgument(
        string commandName, string parameterName, string wordToComplete, CommandAst commandAst,
        IDictionary fakeBoundParameters)
    {
        string word = CompletionText.Unquote(wordToComplete);
        IReadOnlyList<Sandbox> all = CompletionSource.Sandboxes();

        // Selectors match keys and values exactly; only the prefix typed so far is case-blind.
        int eq = word.IndexOf('=', StringComparison.Ordinal);
        var terms = new SortedDictionary<string, LabelSelector>(StringComparer.Ordinal);
        foreach (var (key, value) in all.SelectMany(s => s.Labels))
        {
            if (eq < 0 && key.StartsWith(word, StringComparison.OrdinalIgnoreCase))
            {
                terms[key] = new LabelSelector(key, null);
                // A valueless label is selected by its key alone.
                if (value.Length > 0)
                {
                    terms[$"{key}={value}"] = new LabelSelector(key, value);
                }
            }
            else if (eq >= 0 && key == word[..eq]
                && value.StartsWith(word[(eq + 1)..], StringComparison.OrdinalIgnoreCase))
            {
                terms[$"{key}={value}"] = new LabelSelector(key, value);
            }
        }

        return terms.Select(term =>
        {
            int count = all.Count(s => term.Value.Matches(s.Labels));
            return new CompletionResult(CompletionText.Quote(term.Key), term.Key,
                CompletionResultType.ParameterValue, $"{term.Key} ({count} of {all.Count} sandboxes)");
        });
    }
}
