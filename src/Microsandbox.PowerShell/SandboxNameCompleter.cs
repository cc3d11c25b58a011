using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>Completes sandbox names from the state store.</summary>
public sealed class SandboxNameCompleter : IArgumentCompleter
{
    /// <inheritdoc/>
    public IEnumerable<CompletionResult> CompleteArgument(
        string commandName, string parameterName, string wordToComplete, CommandAst commandAst,
        IDictionary fakeBoundParameters)
    {
        var pattern = new WildcardPattern((wordToComplete ?? "").Trim('\'', '"') + "*", WildcardOptions.None);
        IReadOnlyList<Sandbox> all;
        try
        {
            all = new SandboxEngine(SandboxHome.FromEnvironment()).List();
        }
        catch (SandboxException)
        {
            return [];
        }

        return all.Where(s => pattern.IsMatch(s.Name))
            .Select(s => new CompletionResult(
                s.Name.Contains(' ', StringComparison.Ordinal) ? $"'{s.Name}'" : s.Name,
                s.Name, CompletionResultType.ParameterValue, $"{s.Name} ({s.State})"));
    }
}
