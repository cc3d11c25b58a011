using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// Base of the cmdlets that act on existing sandboxes, chosen by name (wildcards), by label
/// selector, or by sandbox objects from the pipeline.
/// </summary>
public abstract class SandboxTargetCmdlet : SandboxCmdlet
{
    /// <summary>Parameter set for names.</summary>
    protected const string ByName = "Name";

    /// <summary>Parameter set for pipeline objects.</summary>
    protected const string ByInputObject = "InputObject";

    /// <summary>Parameter set for label selectors.</summary>
    protected const string ByLabel = "Label";

    /// <summary>
    /// <para type="description">Names of the sandboxes. Wildcards are allowed.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// <para type="description">Sandbox objects, as Get-Sandbox and New-Sandbox emit them.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ByInputObject, ValueFromPipeline = true)]
    [ValidateNotNull]
    public Sandbox[] InputObject { get; set; } = [];

    /// <summary>
    /// <para type="description">Label selector: key=value or key terms; a sandbox must carry all of them.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ByLabel)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxLabelCompleter))]
    public string[] Label { get; set; } = [];

    /// <summary>The sandboxes this invocation names, once each.</summary>
    protected IReadOnlyList<Sandbox> Targets()
    {
        try
        {
            IEnumerable<Sandbox> found = ParameterSetName switch
            {
                ByInputObject => InputObject,
                ByLabel => ResolveLabels(Label),
                _ => ResolveNames(Name),
            };
            var seen = new HashSet<string>(StringComparer.Ordinal);
            return found.Where(s => seen.Add(s.Name)).ToList();
        }
        catch (SandboxException ex)
        {
            // Nothing can be resolved when the state store itself fails.
            ThrowSandboxError(ex);
            throw;
        }
    }

    /// <summary>Runs <paramref name="action"/> for one sandbox, turning an engine failure into a non-terminating error.</summary>
    protected void ForEach(Sandbox sandbox, Action<Sandbox> action)
    {
        ArgumentNullException.ThrowIfNull(sandbox);
        ArgumentNullException.ThrowIfNull(action);
        try
        {
            action(sandbox);
        }
        catch (SandboxException ex)
        {
            WriteSandboxError(ex);
        }
    }
}
