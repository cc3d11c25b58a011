using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;

namespace Microsandbox.PowerShell;

/// <summary>Completes sandbox names from the state store.</summary>
public sealed class SandboxNameCompleter : IArgumentCompleter
{
    /// <inheritdoc/>
    public IEnumerable<CompletionResult> CompleteArgument(
        string commandName, string parameterName, string wordToComplete, CommandAst commandAst,
        IDictionary fakeBoundParameters)
    {
        string word = CompletionText.Unquote(wordToComplete);
        var pattern = new WildcardPattern(word + "*", WildcardOptions.None);
        return CompletionSource.Sandboxes().Where(s => pattern.IsMatch(s.Name))
            .Select(s => new CompletionResult(
                CompletionText.Quote(s.Name), s.Name, CompletionResultType.ParameterValue,
                $"{s.Name} ({s.State})"));
    }
}
